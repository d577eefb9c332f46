// Pipeline-parallel LoRA fine-tuning over the in-process transport: the 1F1B schedule, and 2 / 3 stages equal to the
// single-process trainer with --grad-accum M (per-step losses, grad norms, final adapter: bit for bit) on floe-brown in f32.

import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadNativeBackend } from '../../src/backend/native.js';
import { referenceBackend } from '../../src/backend/reference.js';
import { hfToGguf } from '../../src/formats/gguf-writer.js';
import { readHfConfig } from '../../src/formats/hf-config.js';
import { loadModel } from '../../src/formats/load.js';
import { readPeftAdapter } from '../../src/model/adapter.js';
import { LORA_TARGETS } from '../../src/model/lora.js';
import { oneFOneB, slotsNeeded } from '../../src/parallel/1f1b.js';
import { balancedStages, formatStages } from '../../src/parallel/stages.js';
import { finetunePipeline, TAG_ACT, TAG_ADAPTER, TAG_GRAD, TAG_NORM } from '../../src/parallel/train-stage.js';
import { localGroup, type Transport } from '../../src/parallel/transport.js';
import { finetune, type FinetuneOptions, type StepMetrics } from '../../src/train/trainer.js';
import type { TrainBackend } from '../../src/backend/backend.js';
import { randomData } from './train-data.js';
import { repoPath } from '../repo.js';

const MODEL = repoPath('models/floe-brown');
const be: TrainBackend = (loadNativeBackend() ?? referenceBackend) as TrainBackend;
const work = mkdtempSync(join(tmpdir(), 'floe-pptrain-'));

test('1F1B: every micro-batch runs F then B once per stage; warm-up P-s-1; in flight <= P-s; a stage sends in the order the next one takes', () => {
  for (const P of [1, 2, 3, 4]) for (let s = 0; s < P; s++) for (const M of [1, 2, 3, 5, 8]) {
    const ops = oneFOneB(s, P, M);
    assert.equal(ops.length, 2 * M);
    let inFlight = 0, maxIn = 0;
    const fSeen: number[] = [], bSeen: number[] = [];
    for (const op of ops) {
      if (op.kind === 'F') { fSeen.push(op.micro); inFlight++; } else { assert.ok(fSeen.includes(op.micro), `B${op.micro} after its F`); bSeen.push(op.micro); inFlight--; }
      maxIn = Math.max(maxIn, inFlight);
    }
    assert.deepEqual(fSeen, [...Array(M).keys()]);
    assert.deepEqual(bSeen, [...Array(M).keys()]);
    assert.equal(maxIn, slotsNeeded(s, P, M), `P ${P} s ${s} M ${M}`);
    const warm = ops.findIndex((o) => o.kind === 'B');
    assert.equal(ops.slice(0, warm).every((o) => o.kind === 'F'), true);
    assert.equal(warm, Math.min(P - s, M), 'the first backward follows the warm-up forwards and one more');
  }
  assert.deepEqual(oneFOneB(0, 3, 5).map((o) => o.kind + o.micro).join(' '), 'F0 F1 F2 B0 F3 B1 F4 B2 B3 B4');
});

test('1F1B: stages that block on their receives (sends never block) all finish; a slot is free again before its reuse', () => {
  for (const P of [2, 3, 4, 5]) for (const M of [1, 2, 3, 4, 7, 9]) {
    const ops = Array.from({ length: P }, (_, s) => oneFOneB(s, P, M));
    const at = new Array<number>(P).fill(0);
    const acts = Array.from({ length: P }, () => new Set<number>()), grads = Array.from({ length: P }, () => new Set<number>()); // delivered to stage s
    const slotBusy = Array.from({ length: P }, (_, s) => new Array<number>(slotsNeeded(s, P, M)).fill(-1));
    for (let progress = true; progress;) {
      progress = false;
      for (let s = 0; s < P; s++) {
        const op = ops[s]![at[s]!];
        if (!op) continue;
        const slot = op.micro % slotBusy[s]!.length;
        if (op.kind === 'F') {
          if (s > 0 && !acts[s]!.has(op.micro)) continue;
          assert.equal(slotBusy[s]![slot], -1, `P ${P} M ${M} stage ${s}: F${op.micro} reuses slot ${slot} while micro-batch ${slotBusy[s]![slot]} is in flight`);
          slotBusy[s]![slot] = op.micro;
          if (s + 1 < P) acts[s + 1]!.add(op.micro);
        } else {
          if (s + 1 < P && !grads[s]!.has(op.micro)) continue;
          assert.equal(slotBusy[s]![slot], op.micro);
          slotBusy[s]![slot] = -1;
          if (s > 0) grads[s - 1]!.add(op.micro);
        }
        at[s]!++;
        progress = true;
      }
    }
    assert.deepEqual(at, ops.map((o) => o.length), `P ${P} M ${M}: every stage finished (no deadlock)`);
  }
});

test('training stage plans put the head on the last stage', () => {
  const { config } = readHfConfig(MODEL);
  assert.equal(formatStages(balancedStages(config, 2)), '0-1,2-5', 'serving: head on stage 0');
  assert.equal(formatStages(balancedStages(config, 2, 'last')), '0-3,4-5', 'training: head (and loss) on the last stage');
});
test('2 stages on a GGUF base with {messages} data (rendered with the file\'s tokenizer.chat_template): equal to one process', async () => {
  const gguf = join(work, 'floe-brown-f32.gguf');
  const m = await loadModel(MODEL);
  await hfToGguf(m, gguf, 'f32');
  m.dispose();
  const chat = join(work, 'chat.jsonl');
  writeFileSync(chat, Array.from({ length: 16 }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `question ${i}?` }, { role: 'assistant', content: `answer ${i * 7}.` }] })).join('\n') + '\n');
  await compare(2, 2, 3 * 2, { model: gguf, data: chat });
});

async function compare(P: number, M: number, micro: number, extra: Partial<FinetuneOptions>, stages?: string): Promise<void> {
  const data = randomData(work, 16);
  const seed = Math.floor(Math.random() * 1e6);
  const base: FinetuneOptions = { model: MODEL, data, out: '', backendImpl: be, lr: 5e-3, lora: { rank: 4, alpha: 8 }, maxSteps: 3, batchSize: 2, seed, maxGradNorm: 0.5, ...extra };
  const want: StepMetrics[] = [];
  const single = await finetune({ ...base, out: join(work, `single-${seed}`), gradAccum: M, onStep: (m) => want.push(m) });
  // every send counted: the pipelined path must really hand activations forward and their gradients back
  const sent: { from: number; to: number; tag: number; bytes: number }[] = [];
  const group = localGroup(P).map((tr): Transport => ({ ...tr, send: (dest, tag, b) => { sent.push({ from: tr.rank, to: dest, tag, bytes: b.byteLength }); return tr.send(dest, tag, b); } }));
  const got: StepMetrics[][] = group.map(() => []);
  const out = join(work, `pp${P}-${seed}`);
  const runs = await Promise.all(group.map((tr) => finetunePipeline({ ...base, out, microBatches: M, stages, onStep: (m) => got[tr.rank]!.push(m) }, tr)));
  const D = readHfConfig(MODEL).config.hiddenSize;
  const tokens = want.reduce((a, m) => a + m.tokens, 0);
  for (let s = 0; s + 1 < P; s++) {
    const fwd = sent.filter((x) => x.from === s && x.to === s + 1 && x.tag === TAG_ACT), bwd = sent.filter((x) => x.from === s + 1 && x.to === s && x.tag === TAG_GRAD);
    assert.equal(fwd.reduce((a, x) => a + x.bytes, 0), tokens * D * 4, `stage ${s} -> ${s + 1}: every token's f32 activations`);
    assert.equal(bwd.reduce((a, x) => a + x.bytes, 0), tokens * D * 4, `stage ${s + 1} -> ${s}: every token's f32 gradients`);
    assert.equal(fwd.length, micro, 'one activation message per micro-batch');
    assert.equal(bwd.length, micro, 'one gradient message per micro-batch');
  }
  const steps = want.length;
  for (let s = 0; s + 1 < P; s++) {
    assert.equal(sent.filter((x) => x.from === s && x.to === s + 1 && x.tag === TAG_NORM).length, steps, `stage ${s} -> ${s + 1}: a partial gradient norm per step`);
  }
  assert.equal(sent.length, 2 * micro * (P - 1) + steps * (P - 1) + 2 * (P - 1), 'and two adapter messages from each stage to rank 0');
  assert.ok(sent.filter((x) => x.tag === TAG_ADAPTER).every((x) => x.to === 0 && x.from > 0));
  assert.equal(runs[0]!.trainableParams, single.trainableParams, 'the stages together train every adapted linear');
  for (const g of got) {
    assert.equal(g.length, want.length);
    g.forEach((m, i) => {
      // bit for bit: the same f32 ops per micro-batch, gradients accumulated in micro-batch order, the norm summed in order
      assert.equal(m.loss, want[i]!.loss, `step ${i + 1} loss`);
      assert.equal(m.grad_norm, want[i]!.grad_norm, `step ${i + 1} grad norm`);
      assert.equal(m.tokens, want[i]!.tokens);
    });
  }
  const { config } = readHfConfig(MODEL);
  const a = readPeftAdapter(join(out, 'final'), config), b = readPeftAdapter(single.output, config);
  let n = 0;
  for (let l = 0; l < config.numLayers; l++) for (const t of LORA_TARGETS) {
    const x = a.layers[l]?.[t], y = b.layers[l]?.[t];
    assert.equal(!!x, !!y, `layer ${l} ${t}`);
    if (!x || !y) continue;
    for (const [p, q, w] of [[x.a, y.a, 'A'], [x.b, y.b, 'B']] as const) {
      assert.equal(p.length, q.length, `layer ${l} ${t} ${w}: size`);
      for (let j = 0; j < q.length; j++) if (p[j] !== q[j]) assert.fail(`layer ${l} ${t} ${w}[${j}]: ${p[j]} vs one process ${q[j]}`);
      n++;
    }
    assert.ok(y.b.some((v) => v !== 0), `layer ${l} ${t}: B moved from its zero init (training ran)`);
  }
  assert.equal(n, 2 * (base.lora?.targets ?? LORA_TARGETS).length * config.numLayers, 'every factor compared');
}

test('2 in-process stages, 4 micro-batches: losses, grad norms and the assembled adapter equal one process (f32)', () => compare(2, 4, 3 * 4, {}));
test('3 in-process stages (--pipeline-stages 0-0,1-3,4-5), 3 micro-batches, checkpointed activations and LoRA dropout: equal to one process',
  () => compare(3, 3, 3 * 3, { checkpointActivations: true, lora: { rank: 4, alpha: 8, dropout: 0.1 } }, '0-0,1-3,4-5'));
test('2 stages, one epoch of 6 micro-batches in steps of 5 and 1 (fewer than the stages): equal to one process',
  () => compare(2, 5, 6, { maxSteps: undefined, epochs: 1, batchSize: 3, lora: { rank: 2, alpha: 4, targets: ['q', 'v', 'down'] } }));
