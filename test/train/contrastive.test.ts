// Contrastive objective against PyTorch float64 fixtures (scripts/make_contrastive_fixtures.py): InfoNCE loss with
// in-batch and hard negatives on pooled, normalised hidden states, and every full / LoRA gradient, on every backend;
// infoNce by finite differences on fresh random vectors; pair data errors; a contrastive finetune run end to end.
//
// B queries, M documents, D hidden.

import { describe, it, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { loadModel } from '../../src/formats/load.js';
import { readSafetensorsSync } from '../../src/formats/safetensors.js';
import { LlamaTrainModel } from '../../src/model/llama-train.js';
import { Embedder } from '../../src/model/embed.js';
import { asF32 } from '../../src/tensor/tensor.js';
import { contrastiveLoss, contrastiveObjective, infoNce, loadPairs, packPairs, type PairSample } from '../../src/train/contrastive.js';
import { finetune } from '../../src/train/trainer.js';
import { rand } from '../engine/helpers.js';
import { assertClose, fixtureAdapter, FIXTURES, tinyModelDir, trainBackends, type TrainFixture } from './fixtures.js';

const SEED = process.env.FLOE_SEED !== undefined ? Number(process.env.FLOE_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;

interface PairFixture {
  model: string; kind: 'full' | 'lora'; pooling: 'mean' | 'last'; temperature: number; loss: number;
  rank?: number; alpha?: number; targets?: TrainFixture['targets'];
  pairs: { query: number[]; positive: number[]; negative?: number[] }[];
  tensors: Map<string, Float32Array>;
}

function readPairFixture(name: string): PairFixture {
  const dir = join(FIXTURES, 'contrastive', name);
  const meta = JSON.parse(readFileSync(join(dir, 'fixture.json'), 'utf8')) as Omit<PairFixture, 'tensors'>;
  const tensors = new Map<string, Float32Array>();
  for (const [n, t] of readSafetensorsSync(join(dir, 'tensors.safetensors')).tensors) tensors.set(n, asF32(t.data).slice());
  return { ...meta, tensors };
}

const pairSamples = (f: PairFixture): PairSample[] => f.pairs.map((p, i) => {
  const query = Int32Array.from(p.query), positive = Int32Array.from(p.positive), negative = p.negative ? Int32Array.from(p.negative) : null;
  return { query, positive, negative, tokens: new Int32Array(0), mask: new Uint8Array(0), line: i + 1 };
});

for (const [bname, be] of trainBackends()) {
  describe(`contrastive objective on ${bname}`, () => {
    for (const name of ['full_mean_gqa_f32', 'lora_last_gqa_f32']) {
      it(`${name}: InfoNCE loss and every gradient match torch, identical with checkpointing`, async () => {
        const f = readPairFixture(name);
        const base = await loadModel(join(FIXTURES, 'models', f.model));
        const grads: Float32Array[][] = [];
        for (const ckpt of [false, true]) {
          const adapter = f.kind === 'lora' ? fixtureAdapter({ ...f, rslora: false, tensors: f.tensors } as unknown as TrainFixture, base.config.numLayers) : null;
          const m = LlamaTrainModel.fromTensors(base.config, base.tensors, be, { adapter, full: f.kind === 'full', checkpointActivations: ckpt });
          const samples = pairSamples(f);
          const p = packPairs(samples);
          assert.equal(p.numQueries, f.pairs.length);
          assert.equal(p.numDocs, f.pairs.length + f.pairs.filter((x) => x.negative).length);
          const B = p.numQueries;
          const sum = m.forwardBackwardHidden(p.batch, contrastiveLoss(p.batch, B, { temperature: f.temperature, pooling: f.pooling }, 1 / B));
          assert.ok(Math.abs(sum / B - f.loss) < 2e-4 * f.loss, `loss ${sum / B} vs torch ${f.loss}`);
          const names = new Set(m.params.map((q) => q.name));
          for (const n of f.tensors.keys()) if (n.startsWith('grad.')) assert.ok(names.has(n.slice('grad.'.length)), `${n} is trained`);
          for (const q of m.params) assertClose(q.grad, f.tensors.get(`grad.${q.name}`)!, `${name} ckpt=${ckpt} ${q.name}`, 2e-3, 2e-4);
          // eval path: same loss, no gradients
          const ev = m.evalHidden(p.batch, contrastiveLoss(p.batch, B, { temperature: f.temperature, pooling: f.pooling }, 1));
          assert.ok(Math.abs(ev - sum) < 1e-5 * Math.abs(sum), `eval loss ${ev} vs train ${sum}`);
          grads.push(m.params.map((q) => q.grad.slice()));
        }
        grads[0]!.forEach((g, i) => assert.deepEqual(g, grads[1]![i], 'checkpointing changes no gradient bit'));
      });
    }
  });
}

test(`infoNce: gradients match central finite differences (seed ${SEED})`, () => {
  const r = rand(SEED);
  const B = 3, M = 5, D = 4, tau = 0.3;
  const q = Float32Array.from({ length: B * D }, () => 2 * r() - 1);
  const d = Float32Array.from({ length: M * D }, () => 2 * r() - 1);
  const dq = new Float32Array(B * D), dd = new Float32Array(M * D);
  const L = infoNce(q, d, B, M, D, tau, dq, dd, 0.5);
  assert.ok(L > 0);
  const h = 1e-2;
  for (const [x, g] of [[q, dq], [d, dd]] as const) {
    for (let i = 0; i < x.length; i++) {
      const x0 = x[i]!;
      x[i] = x0 + h; const up = infoNce(q, d, B, M, D, tau, null, null, 1);
      x[i] = x0 - h; const dn = infoNce(q, d, B, M, D, tau, null, null, 1);
      x[i] = x0;
      const fd = 0.5 * (up - dn) / (2 * h);
      assert.ok(Math.abs(fd - g[i]!) < 2e-3 * Math.max(1, Math.abs(fd)), `∂/∂x[${i}]: analytic ${g[i]} vs fd ${fd}`);
    }
  }
  assert.throws(() => infoNce(q, d, B, 2, D, tau, null, null, 1), /2 documents for 3 queries/);
});

test(`contrastiveLoss: symmetric InfoNCE with BOS left out of mean pooling — value from pooling written out here, dh by finite differences (seed ${SEED})`, () => {
  const r = rand(SEED ^ 0x51);
  const BOS = 9, D = 5, tau = 0.2, B = 3;
  // 3 queries, 3 positives, 1 hard negative; texts start with BOS except the second query (pooled over all its rows)
  const lens = [3, 2, 4, 2, 5, 3, 2];
  const T = lens.reduce((a, b) => a + b, 0);
  const segStart = Int32Array.from([0, ...lens.map((_, i) => lens.slice(0, i + 1).reduce((a, b) => a + b, 0))]);
  const tokens = new Int32Array(T).fill(4);
  lens.forEach((_, s) => { if (s !== 1) tokens[segStart[s]!] = BOS; });
  const batch = { tokens, targets: new Int32Array(T).fill(-1), positions: new Int32Array(T), segStart };
  const h = Float32Array.from({ length: T * D }, () => 2 * r() - 1);
  const loss = contrastiveLoss(batch, B, { temperature: tau, pooling: 'mean', bosId: BOS, symmetric: true }, 1);
  const dh = new Float32Array(T * D);
  const L = loss(h, dh);
  // expected: unit means of the non-BOS rows; ½ (query→documents over all 4 + positive→queries over the 3)
  const e = lens.map((n, s) => {
    const a = segStart[s]! + (s !== 1 ? 1 : 0), m = segStart[s]! + n - a;
    const v = Array.from({ length: D }, (_, k) => { let x = 0; for (let t = a; t < a + m; t++) x += h[t * D + k]!; return x / m; });
    const norm = Math.hypot(...v);
    return v.map((x) => x / norm);
  });
  const dot = (a: number[], b: number[]) => a.reduce((x, y, k) => x + y * b[k]!, 0);
  const nce = (qs: number[][], ds: number[][]) => qs.reduce((acc, q, i) => {
    const z = ds.map((d) => dot(q, d) / tau);
    return acc + Math.log(z.reduce((x, y) => x + Math.exp(y), 0)) - z[i]!;
  }, 0);
  const want = 0.5 * (nce(e.slice(0, 3), e.slice(3)) + nce(e.slice(3, 6), e.slice(0, 3)));
  assert.ok(Math.abs(L - want) < 1e-4 * Math.max(1, want), `loss ${L} vs ${want}`);
  const eps = 1e-2;
  for (let i = 0; i < h.length; i++) {
    const x0 = h[i]!;
    h[i] = x0 + eps; const up = loss(h, null);
    h[i] = x0 - eps; const dn = loss(h, null);
    h[i] = x0;
    const fd = (up - dn) / (2 * eps);
    assert.ok(Math.abs(fd - dh[i]!) < 3e-3 * Math.max(1, Math.abs(fd)), `∂/∂h[${i}]: analytic ${dh[i]} vs fd ${fd}`);
    if (tokens[Math.floor(i / D)] === BOS) assert.equal(dh[i], 0, `BOS row ${Math.floor(i / D)} gets no gradient`);
  }
  // without bosId the BOS rows are pooled: a different loss
  assert.ok(Math.abs(contrastiveLoss(batch, B, { temperature: tau, pooling: 'mean', symmetric: true }, 1)(h, null) - L) > 1e-4);
});

test('loadPairs: tokenizes query / positive / negative; bad lines fail with file:line and what is wrong', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-pairs-'));
  const tok = { encode: (s: string) => [1, ...Array.from(s, (c) => c.charCodeAt(0) % 50 + 3)] };
  const file = join(dir, 'p.jsonl');
  writeFileSync(file, `${JSON.stringify({ query: 'ab', positive: 'cde' })}\n\n${JSON.stringify({ query: 'x', positive: 'yy', negative: 'zzzzzz' })}\n`);
  const { samples, truncated } = loadPairs(file, tok, 5);
  assert.equal(samples.length, 2);
  assert.equal(truncated, 1);
  assert.deepEqual([...samples[0]!.query], tok.encode('ab'));
  assert.equal(samples[0]!.negative, null);
  assert.equal(samples[1]!.negative!.length, 5);
  assert.equal(samples[1]!.line, 3);
  assert.equal(samples[1]!.tokens.length, 2 + 3 + 5);
  const bad = (text: string, re: RegExp) => { writeFileSync(file, text); assert.throws(() => loadPairs(file, tok, 5), re); };
  bad('{"query":"a"}\n', /p\.jsonl:1: "positive" must be a non-empty string, got nothing/);
  bad('{"query":"a","positive":"b"}\n{"text":"a"}\n', /p\.jsonl:2: unknown field "text"/);
  bad('{"query":"a","positive":"b"}\nnot json\n', /p\.jsonl:2: invalid JSON/);
  bad('\n', /no pairs/);
});

test('finetune --objective contrastive: full fine-tuning lowers the InfoNCE loss and writes an embedder', async () => {
  const dir = tinyModelDir();
  const data = join(dir, 'pairs.jsonl');
  // pairs share a topic word: the query names it, the positive uses it in a sentence
  const topics = ['cat', 'rain', 'hat', 'dog', 'sun', 'tree', 'ship', 'bread'];
  const lines = topics.flatMap((w, i) => [0, 1].map((k) => JSON.stringify({ query: `${w} ${k}`, positive: `the ${w} is here and the ${w} ${k === 0 ? 'sat' : 'ran'}`, negative: `a ${topics[(i + 3) % topics.length]} went by` })));
  writeFileSync(data, lines.join('\n') + '\n');
  const out = join(dir, 'out');
  const losses: number[] = [];
  const s = await finetune({
    model: dir, data, out, full: true, maxSteps: 12, lr: 3e-3, batchSize: 8, seed: 3, eval: data,
    objective: contrastiveObjective({ temperature: 0.1 }), onStep: (m) => losses.push(m.loss),
  });
  assert.equal(s.steps, 12);
  assert.ok(s.eval!.eval_loss < s.initialEval!.eval_loss, `eval InfoNCE ${s.initialEval!.eval_loss} → ${s.eval!.eval_loss} goes down`);
  assert.ok(losses.at(-1)! < losses[0]!, `train loss ${losses[0]} → ${losses.at(-1)}`);
  assert.ok(existsSync(join(s.output, 'embedding_config.json')));
  const emb = await Embedder.open(s.output);
  assert.equal(emb.pooling, 'mean');
  assert.equal(emb.dim, 64);
  const [a, b] = emb.embed(['cat 0', 'the cat is here and the cat sat']);
  assert.ok(Math.abs(a!.reduce((x, v) => x + v * v, 0) - 1) < 1e-5);
  assert.ok(b!.length === 64);
  // resuming with another temperature is refused (the objective is part of the run's options)
  await assert.rejects(finetune({ model: dir, data, out, full: true, maxSteps: 14, lr: 3e-3, batchSize: 8, seed: 3, resume: out, objective: contrastiveObjective({ temperature: 0.2 }) }), /trained with --temperature 0\.1, this run has --temperature 0\.2: /);
});

test('floe finetune flags: --objective contrastive builds the objective; misplaced flags are usage errors', async () => {
  const { objectiveOption } = await import('../../src/cli/train-args.js');
  const o = (await objectiveOption({ objective: 'contrastive', temperature: '0.1', pooling: 'last' })).objective!;
  assert.deepEqual(o.options, { kind: 'contrastive', temperature: 0.1, pooling: 'last', skipBos: false, symmetric: true });
  assert.deepEqual(await objectiveOption({}), {});
  await assert.rejects(objectiveOption({ objective: 'mlm' }), /--objective expects lm or contrastive, got 'mlm'/);
  await assert.rejects(objectiveOption({ temperature: '0.1' }), /--temperature and --pooling apply to --objective contrastive/);
  await assert.rejects(objectiveOption({ objective: 'contrastive', temperature: '0' }), /temperature/);
  await assert.rejects(objectiveOption({ objective: 'contrastive', 'train-on-prompt': true }), /--train-on-prompt applies to language-model data/);
});

test('finetune --objective contrastive with LoRA: the adapter lowers the eval loss and Embedder.open(…, { adapter }) uses it', async () => {
  const dir = tinyModelDir();
  const data = join(dir, 'pairs.jsonl');
  const topics = ['cat', 'rain', 'hat', 'dog', 'sun', 'tree'];
  writeFileSync(data, topics.map((w) => JSON.stringify({ query: `${w}?`, positive: `the ${w} and the ${w} again` })).join('\n') + '\n');
  const s = await finetune({
    model: dir, data, out: join(dir, 'lora'), maxSteps: 10, lr: 1e-2, batchSize: 6, seed: 5, eval: data, lora: { rank: 4, alpha: 8 },
    objective: contrastiveObjective({ temperature: 0.1, pooling: 'last' }),
  });
  assert.ok(s.eval!.eval_loss < s.initialEval!.eval_loss, `eval InfoNCE ${s.initialEval!.eval_loss} → ${s.eval!.eval_loss}`);
  assert.ok(existsSync(join(s.output, 'adapter_model.safetensors')));
  // PEFT's task type for an embedder's adapter, in the final adapter and in every checkpoint
  assert.ok(s.checkpoints.length > 0);
  for (const d of [s.output, ...s.checkpoints]) assert.equal(JSON.parse(readFileSync(join(d, 'adapter_config.json'), 'utf8')).task_type, 'FEATURE_EXTRACTION', d);
  // and keyed as PEFT keys an AutoModel (LlamaModel) base's modules: base_model.model.layers.…, no causal-LM model.
  const keys = [...readSafetensorsSync(join(s.output, 'adapter_model.safetensors')).tensors.keys()];
  assert.ok(keys.length > 0 && keys.every((k) => /^base_model\.model\.layers\.\d+\./.test(k)), keys.slice(0, 3).join(', '));
  const tuned = await Embedder.open(dir, { adapter: s.output });
  const base = await Embedder.open(dir);
  assert.equal(tuned.pooling, 'last', 'pooling from the adapter dir\'s embedding_config.json');
  assert.equal(base.pooling, 'mean');
  const a = tuned.embed(['cat?'])[0]!, b = (await Embedder.open(dir, { pooling: 'last' })).embed(['cat?'])[0]!;
  assert.ok(a.some((x, i) => Math.abs(x - b[i]!) > 1e-4), 'the adapter changes the vector');
});

test('finetune --objective contrastive keeps the base embedder\'s max_tokens: texts are cut to it and embedding_config.json says it (not the context)', async () => {
  const dir = tinyModelDir(); // context 256
  writeFileSync(join(dir, 'embedding_config.json'), JSON.stringify({ pooling: 'mean', pool_skip_bos: true, max_tokens: 32 }) + '\n');
  const data = join(dir, 'pairs.jsonl');
  const long = Array.from({ length: 40 }, (_, i) => ['the cat', 'in the rain', 'sat there'][i % 3]).join(' ');
  writeFileSync(data, ['cat', 'rain', 'hat', 'dog'].map((w) => JSON.stringify({ query: `${w}?`, positive: `the ${w} and ${long}` })).join('\n') + '\n');
  const logs: string[] = [];
  const run = (out: string, maxSeqLen?: number) => finetune({
    model: dir, data, out: join(dir, out), maxSteps: 1, batchSize: 4, seed: 1, lora: { rank: 2 }, maxSeqLen,
    objective: contrastiveObjective(), log: (l) => logs.push(l),
  });
  const maxTokens = (s: { output: string }) => JSON.parse(readFileSync(join(s.output, 'embedding_config.json'), 'utf8')).max_tokens;
  assert.equal(maxTokens(await run('kept')), 32, 'the base\'s 32, not the context\'s 256');
  assert.match(logs.join('\n'), /4 truncated to 32/);
  assert.equal((await Embedder.open(dir, { adapter: join(dir, 'kept', 'final') })).maxTokens, 32);
  // --max-seq-len sets both, as sentence-transformers' max_seq_length does
  assert.equal(maxTokens(await run('set', 48)), 48);
});
